"""Block costs of a Llama of a given shape with random weights (no checkpoint needed), e.g. 7B on a GPU.

    python -m scripts.profile shape --shape 7b --device cuda --dtype float16 --out runs/gpu_check/profile_7b
    python -m scripts.profile shape --shape tiny --device cpu --out /tmp/profile_tiny     # what the tests run

Timing is what a block costs, whatever the weights, so random weights give the real costs of that shape:
ar, shallow, the drafter heads, deep(n) for n = 1..--steps + 1 and one trainer step (the block mode
does the measuring and writes the same report). The weights are created on --device directly (never whole in
host RAM). The report adds the speedup projected for that shape at the mean committed tokens per block measured
elsewhere (--committed, default: the identity drafter's 1.05 and the KD+CE drafter's 1.14 from the README), for
a block that drafts m tokens.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from evaluation.cli import OneLineParser, apply_runtime, fail, resolve_device_dtype
from scripts.profile.cost_model import block_ms, report_markdown
from scripts.profile.measure import measure
from scripts.profile.report import command, mode_parser, write_report

SHAPES = {
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
}


def build_parser() -> OneLineParser:
    p = mode_parser("shape", __doc__)
    p.add_argument("--shape", default="7b", choices=sorted(SHAPES), help="Llama shape (7b: Llama-2-7B / Vicuna-7B)")
    p.add_argument("--context", type=int, default=160)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--dvi-batch-size", type=int, default=64)
    p.add_argument("--dvi-topk", type=int, default=1024)
    p.add_argument("--dvi-update-every", type=int, default=8)
    p.add_argument("--committed", default="1.05,1.14", help="mean committed tokens per block to project speedups at")
    p.add_argument("--out", default="runs/gpu_check/profile_shape")
    return p


def random_llama(shape: str, device: str, dtype: torch.dtype):
    """A Llama of ``shape`` with random weights, allocated on ``device`` in ``dtype`` from the start."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            lm = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    lm.to(dtype).eval().requires_grad_(False)
    return lm


def projection_markdown(costs: dict, steps: int, committed: list[float]) -> str:
    lines = ["", "Projected speedup over plain greedy decoding (c x ar / block(m)) at the mean committed tokens per "
             "block c measured elsewhere:", "",
             "| drafts m | " + " | ".join(f"c = {c:.2f}, identity | c = {c:.2f}, DVI" for c in committed) + " |",
             "|---:|" + "---:|---:|" * len(committed)]
    for m in range(1, steps + 1):
        cells = []
        for c in committed:
            cells += [f"{c * costs['ar_ms'] / block_ms(costs, m, 'identity'):.2f}x",
                      f"{c * costs['ar_ms'] / block_ms(costs, m, 'lora'):.2f}x"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve_device_dtype(args)
    apply_runtime(args)
    try:
        committed = [float(x) for x in args.committed.split(",") if x.strip()]
    except ValueError:
        fail(f"--committed {args.committed!r}: pass comma-separated numbers, e.g. 1.05,1.14")
    if not committed or any(c < 1 for c in committed) or args.context < 1 or args.repeats < 1:
        fail("--committed values must be >= 1 (a block commits at least one token); --context, --repeats >= 1")
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import DTYPES

    lm = random_llama(args.shape, args.device, DTYPES[args.dtype])
    if not 1 <= args.exitlayer < lm.config.num_hidden_layers:
        fail(f"--exitlayer {args.exitlayer} is outside 1..{lm.config.num_hidden_layers - 1} for shape {args.shape}")
    km = KangarooModel(model_id=f"random-{args.shape}", exit_layer=args.exitlayer, base_model=lm)
    costs = measure(km, SimpleNamespace(steps=args.steps, context=args.context, repeats=args.repeats,
                                        dvi_batch_size=args.dvi_batch_size, dvi_topk=args.dvi_topk),
                    args.lora_r, float(args.lora_r))
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    meta = {"model": f"random weights, {args.shape} shape ({json.dumps(SHAPES[args.shape])})", "device": device,
            "dtype": args.dtype, "threads": torch.get_num_threads(), "exit layer": args.exitlayer,
            "context": args.context, "repeats": args.repeats, "lora r": args.lora_r,
            "trainer batch": args.dvi_batch_size, "top-K": args.dvi_topk, "update every": args.dvi_update_every,
            "command": command("shape", argv)}
    md = report_markdown(costs, meta, args.steps, args.dvi_update_every) + projection_markdown(costs, args.steps,
                                                                                              committed)
    write_report(args.out, "block_costs", md, {"meta": meta, "costs": costs})
    return 0

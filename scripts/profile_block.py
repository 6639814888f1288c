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

Writes OUT/block_costs.json and OUT/block_costs.md. The DVI head's rank is --dvi-lora-r (default: the rank of
--load-lora when given, else 64). Timing only: no answer is decoded and nothing is asserted.
"""
from __future__ import annotations

import json
import shlex
import statistics
import sys
from pathlib import Path

import torch

from kangaroo import cpu_engine
from scripts.profile_draft import draft_costs, draft_markdown
from evaluation.cli import OneLineParser, add_model_args, add_speculation_args, resolve_device_dtype, resolve_model_id


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
    p.add_argument("--draft-adapter", default="none", choices=("none", "train"),
                   help="the drafter of the drafted-token rows: none (layer-k features) or a trained Kangaroo adapter "
                        "(its layer runs per drafted token too)")
    p.add_argument("--head-precisions", default="float32,bf16,int8",
                   help="drafter head precisions to time one self-drafted token with (kangaroo/packed_head.py)")
    p.add_argument("--out", default="runs/profile")
    return p


# ----------------------------------------------------------------------------------------------- cost model (pure)
def block_ms(costs: dict, m: int, head: str, online: bool = False, update_every: int = 8) -> float:
    """Modelled wall time of one block that drafts ``m`` tokens with ``head`` ('identity' or 'lora')."""
    t = (m + 1) * costs["shallow_ms"] + m * costs[f"head_{head}_ms"] + costs["deep_ms"][m + 1]
    return t + (costs["train_ms"] / update_every if online else 0.0)


def break_even(costs: dict, m: int, head: str, online: bool = False, update_every: int = 8) -> float:
    """Committed tokens per block at which a block of ``m`` drafts matches plain greedy decoding."""
    return block_ms(costs, m, head, online, update_every) / costs["ar_ms"]


# ----------------------------------------------------------------------------------------------- timing
def median_ms(fn, repeats: int, device) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    from kangaroo.timing import elapsed_ms

    fn()
    return statistics.median(elapsed_ms(fn, device) for _ in range(repeats))


def weight_bytes(lm) -> int:
    """Bytes of weights one decode token reads: every decoder layer, the final norm and the head (the
    embedding gives one row; a tied head is counted once, as the head)."""
    params = list(lm.model.layers.parameters()) + list(lm.model.norm.parameters()) + [lm.lm_head.weight]
    return sum(p.numel() * p.element_size() for p in params)


@torch.no_grad()
def stream_rate(mb: int, repeats: int, device, dtype) -> float:
    """Bytes per second a 1-row ``F.linear`` reads of an ``mb`` MiB weight matrix on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    w = torch.randn(max(1, mb * 2 ** 20 // (4 * 1024)), 1024, device=device).to(dtype)
    x = torch.randn(1, 1024, device=device).to(dtype)
    ms = median_ms(lambda: torch.nn.functional.linear(x, w), repeats, device)
    torch.set_num_threads(threads)
    return w.numel() * w.element_size() / (ms / 1e3)


@torch.no_grad()
def context_caches(km, context: int, n_max: int):
    """Caches holding a random ``context``-token prompt, the prompt, ``at_context(fn)`` (a call that leaves the
    caches at that length) and ``ar``: one plain greedy step so wrapped."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, km.config.vocab_size, (1, context), generator=gen).to(km.device)
    caches = km.new_caches(context + n_max + 2)
    km.forward_deep(km.forward_shallow(prompt, caches.shallow).h, caches.deep)
    L = caches.shallow.length

    def at_context(fn):  # every timed call starts from the same cache length and leaves it there
        def run():
            fn()
            caches.crop(L)
        return run

    one = prompt[:, :1]
    ar = at_context(lambda: km.verifier_logits(km.forward_deep(km.forward_shallow(one, caches.shallow).h,
                                                               caches.deep)).argmax(-1).tolist())
    return caches, prompt, at_context, ar


@torch.no_grad()
def measure(km, args, lora_r: int, lora_alpha: float, train: bool = True) -> dict:
    from dvi.config import ScheduleConfig, TrainerConfig
    from dvi.online_trainer import OnlineTrainer
    from dvi.types import Batch
    from kangaroo.drafter_head import DrafterHead, attach_drafter_head

    cfg, dev, n_max = km.config, km.device, args.steps + 1
    gen = torch.Generator().manual_seed(0)
    caches, prompt, at_context, ar = context_caches(km, args.context, n_max)
    L = caches.shallow.length
    one = prompt[:, :1]
    shallow = at_context(lambda: km.forward_shallow(one, caches.shallow))
    hk = km.forward_shallow(one, caches.shallow).hk[:, -1]
    caches.crop(L)
    lora_head = DrafterHead.from_verifier_head(km.head_model, r=lora_r, alpha=lora_alpha)
    torch.nn.init.normal_(lora_head.proj.B, std=1e-3)  # a trained head has B != 0: time that path
    h_n = km.forward_shallow(prompt[:, :n_max], caches.shallow).h
    caches.crop(L)
    costs = {
        "ar_ms": median_ms(ar, args.repeats, dev),
        "shallow_ms": median_ms(shallow, args.repeats, dev),
        "head_identity_ms": median_ms(lambda: km.drafter_logits_from_hk(hk).softmax(-1).max(-1), args.repeats, dev),
        "head_lora_ms": median_ms(lambda: lora_head(hk).softmax(-1).max(-1), args.repeats, dev),
        "deep_ms": {n: median_ms(at_context(lambda n=n: km.verifier_logits(km.forward_deep(h_n[:, :n], caches.deep))
                                            .argmax(-1).tolist()), args.repeats, dev) for n in range(1, n_max + 1)},
    }
    if not train:
        return costs
    # one trainer step on a synthetic batch of the real shapes, past the warm-up (every term computed)
    attach_drafter_head(km, r=lora_r, alpha=lora_alpha).load_state_dict(lora_head.state_dict())
    b, k = args.dvi_batch_size, min(args.dvi_topk, cfg.vocab_size)
    batch = Batch(hk=torch.randn(b, cfg.hidden_size, generator=gen).to(dev, torch.float16),
                  token=torch.randint(0, cfg.vocab_size, (b,), generator=gen).to(dev),
                  reward=(torch.rand(b, generator=gen) < 0.3).float().to(dev),
                  pos=torch.randint(1, args.steps + 1, (b,), generator=gen).to(dev),
                  is_first_reject=(torch.rand(b, generator=gen) < 0.5).to(dev),
                  z_idx=torch.stack([torch.randperm(cfg.vocab_size, generator=gen)[:k] for _ in range(b)]).to(dev),
                  z_val=torch.randn(b, k, generator=gen).to(dev, torch.float16))
    trainer = OnlineTrainer(km, TrainerConfig(lr=1e-4, tau=1.0, max_ms=None), ScheduleConfig(0, 1.0, 1.0, 0.2),
                            cfg.vocab_size)
    costs["train_ms"] = median_ms(lambda: trainer.step(batch, 10 ** 6), max(3, args.repeats // 3), dev)
    km.drafter_head = None  # measured: back to the identity drafter
    return costs


def measure_draft(km, args, r: int, alpha: float) -> list[dict]:
    """``scripts.profile_draft.draft_costs`` at this run's context, for every --drafter-vocabs x --head-precisions."""
    caches, prompt, _, ar = context_caches(km, args.context, args.steps + 1)
    vocabs = [int(v) for v in args.drafter_vocabs.split(",")]
    return draft_costs(km, caches, prompt[:, :1], ar, vocabs, args.head_precisions.split(","), r, alpha,
                       args.repeats)


# ----------------------------------------------------------------------------------------------- report
def targets_markdown(costs: dict) -> list[str]:
    """The lean-engine targets (issue 9) against these costs."""
    ar, deep, n_max = costs["ar_ms"], costs["deep_ms"], max(costs["deep_ms"])
    rows = [("ar / stream limit", ar / costs["stream_limit_ms"], 1.25), ("deep(2) / ar", deep[2] / ar, 1.10),
            (f"deep({n_max}) / ar", deep[n_max] / ar, 1.30)] if n_max >= 2 else []
    return ["| ratio | measured | target |", "|---|---:|---:|"] + [
        f"| {name} | {v:.2f} | <= {t:.2f} {'(met)' if v <= t else '(missed)'} |" for name, v, t in rows]


def variants_markdown(variants: dict) -> list[str]:
    """One row per engine/thread variant: the costs that decide a block, side by side."""
    names = list(variants)
    n_max = max(variants[names[0]]["deep_ms"])
    lines = ["| variant | ar | shallow | head | " + " | ".join(f"deep({n})" for n in range(1, n_max + 1)) +
             f" | deep(2)/ar | deep({n_max})/ar |", "|---" * (n_max + 6) + "|"]
    for name in names:
        c = variants[name]
        lines.append(f"| {name} | {c['ar_ms']:.1f} | {c['shallow_ms']:.1f} | {c['head_identity_ms']:.1f} | " +
                     " | ".join(f"{c['deep_ms'][n]:.1f}" for n in range(1, n_max + 1)) +
                     f" | {c['deep_ms'][2] / c['ar_ms']:.2f} | {c['deep_ms'][n_max] / c['ar_ms']:.2f} |")
    return lines


def report_markdown(costs: dict, meta: dict, steps: int, update_every: int) -> str:
    lines = ["# Block costs (median ms)", ""] + [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += ["| part | ms |", "|---|---:|",
              f"| ar: one plain greedy step (all layers + head, 1 token) | {costs['ar_ms']:.1f} |",
              f"| shallow: first k layers, 1 token | {costs['shallow_ms']:.1f} |",
              f"| drafter head, identity (verifier's head) | {costs['head_identity_ms']:.1f} |",
              f"| drafter head, LoRA (DVI) | {costs['head_lora_ms']:.1f} |"]
    lines += [f"| deep({n}): verify {n} tokens (layers k.. + head) | {ms:.1f} |" for n, ms in costs["deep_ms"].items()]
    lines += [f"| one DVI trainer step | {costs['train_ms']:.1f} |"]
    if "stream_limit_ms" in costs:
        lines += [f"| stream limit: weight bytes per token / one core's stream rate | {costs['stream_limit_ms']:.1f} |",
                  ""] + targets_markdown(costs)
    lines += ["",
              "Break-even committed tokens per block (= block cost / ar; a block commits accepted + 1 tokens, so "
              "it can commit at most m + 1):", "",
              "| drafts m | identity Kangaroo | DVI deployed | DVI learning online |", "|---:|---:|---:|---:|"]
    for m in range(1, steps + 1):
        lines.append(f"| {m} | {break_even(costs, m, 'identity'):.2f} | {break_even(costs, m, 'lora'):.2f} | "
                     f"{break_even(costs, m, 'lora', True, update_every):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve_model_id(args)
    resolve_device_dtype(args)  # also applies --num-threads
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
            "top-K": args.dvi_topk, "update every": args.dvi_update_every, "weight MB per token": round(weight_bytes(lm) / 1e6, 1),
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
    (out / "block_costs.md").write_text(md)
    (out / "block_costs.json").write_text(json.dumps({"meta": meta, "costs": costs}, indent=2))
    print(md)


if __name__ == "__main__":
    from evaluation.cli import run_main

    raise SystemExit(run_main(main))

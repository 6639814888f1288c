"""All the engine's figures of issue 18 in one run, with llama.cpp beside them, into OUT/README.md:

    bash scripts/setup/build_llamacpp.sh        # once
    python -m scripts.profile engine --model-id smollm2-135m --out runs/engine

  1. llama.cpp's ``llama-bench`` (pp512, tg64, 1 thread) on the bundled GGUF (Q4_1) and on its F32, BF16 and Q8_0
     conversions (``llama-quantize --allow-requantize``, into .llamacpp/models/)
  2. the block mode (``block.py``): our step (ar), verify(n), the stream limit and FMA floor, per weight format
     (--weights-list; ours converts the model as llama-quantize does, so the rows compare like with like)
  3. our prefill, tokens/s over a 512-token prompt (the plain path through MKL, as before issue 18)
  4. the overhead mode (``overhead.py``): the Python work per block

The machine's load average is recorded before and after: the figures mean what they say on a quiet machine only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from evaluation.cli import OneLineParser, apply_runtime, resolve_device_dtype, resolve_model_id
from scripts.profile import block, overhead
from scripts.profile.report import command, mode_parser, write_report

REPO = Path(__file__).resolve().parents[2]
LLAMA_FORMATS = {"stored": None, "float32": "F32", "bfloat16": "BF16", "q8_0": "Q8_0"}  # ours -> llama-quantize type


def build_parser() -> OneLineParser:
    p = mode_parser("engine", __doc__, speculation=False)
    p.add_argument("--weights-list", default="stored,float32,bfloat16,q8_0")
    p.add_argument("--llamacpp-bin", default=str(REPO / ".llamacpp" / "build" / "bin"))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default="runs/engine")
    return p


def llama_bench(bin_dir: Path, gguf: Path, fmt: str | None, models: Path) -> str:
    """llama-bench's markdown rows for ``gguf`` converted to ``fmt`` (None: as it is)."""
    path = gguf
    if fmt is not None:
        path = models / f"{gguf.stem}.{fmt}.gguf"
        if not path.is_file():
            models.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(gguf), str(path), fmt],
                           check=True, capture_output=True, timeout=1800)
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(path), "-p", "512", "-n", "64", "-t", "1",
                          "-r", "3", "-o", "md"], check=True, capture_output=True, text=True, timeout=3600).stdout
    return "\n".join(line for line in out.splitlines() if line.startswith("|"))


@torch.no_grad()
def prefill_rate(model_id: str, tokens: int = 512, repeats: int = 3) -> float:
    """Our prefill of a ``tokens``-token prompt (all layers, no head), tokens per second of wall time."""
    from kangaroo.llama_forward import new_cache, run_layers
    from kangaroo.model_loading import load_causal_lm

    lm = load_causal_lm(model_id)
    body, best = lm.model, float("inf")
    ids = torch.randint(3, lm.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    for _ in range(repeats + 1):
        cache = new_cache(lm.config, len(body.layers), tokens + 1, torch.float32, "cpu")
        t0 = time.perf_counter()
        run_layers(body.layers, body.embed_tokens(ids), cache, body.rotary_emb)
        best = min(best, time.perf_counter() - t0)
    return tokens / best


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    return f"{cpu}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}"


def steps_table(costs: dict, llama_rows: dict) -> list[str]:
    """Per format: our step and verify ratios beside llama.cpp's tg64 step."""
    lines = ["| format | ours: step ms | verify 2 / step | verify 7 / step | stream limit ms | llama.cpp tg64 ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, c in costs["variants"].items():
        fmt = name.split("/")[0]
        deep, ar = c["deep_ms"], c["ar_ms"]
        n = max(deep, key=int)
        lines.append(f"| {name} | {ar:.2f} | {deep['2' if '2' in deep else 2] / ar:.2f} | {deep[n] / ar:.2f} | "
                     f"{c['stream_limit_ms']:.2f} | {llama_rows.get(fmt, '-')} |")
    return lines


def tg_ms(rows: str) -> str:
    """ms per token of llama-bench's tg64 row."""
    for line in rows.splitlines():
        if "tg64" in line:
            tps = float(line.split("|")[-2].split("±")[0])
            return f"{1e3 / tps:.2f}"
    return "-"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    resolve_model_id(args)
    resolve_device_dtype(args)
    apply_runtime(args)
    from kangaroo.model_loading import resolve_model_source

    out, load_before = Path(args.out), machine()
    gguf, bin_dir = resolve_model_source(args.model_id).blocks_gguf, Path(args.llamacpp_bin)
    formats = args.weights_list.split(",")
    llama = {}
    if gguf and (bin_dir / "llama-bench").is_file():
        llama = {f: llama_bench(bin_dir, Path(gguf), LLAMA_FORMATS[f], REPO / ".llamacpp" / "models")
                 for f in formats if f in LLAMA_FORMATS}
    common = ["--model-id", args.model_id, "--num-threads", "1", "--engines", "auto", "--threads", "1"]
    block.main(common + ["--weights-list", args.weights_list, "--repeats", str(args.repeats),
                         "--out", str(out / "profile")])
    overhead.main(["--model-id", args.model_id, "--num-threads", "1", "--out", str(out / "overhead")])
    costs = json.loads((out / "profile" / "block_costs.json").read_text())["costs"]
    md = ["# The engine per weight format, beside llama.cpp (issue 18)", "",
          f"- command: `{command('engine', argv)}`",
          f"- machine before: {load_before}", f"- machine after: {machine()}", "- 1 thread everywhere", "",
          *steps_table(costs, {f: tg_ms(r) for f, r in llama.items()}), "",
          f"Our prefill (512 tokens, plain path, MKL): {prefill_rate(args.model_id):.0f} tokens/s", "",
          "llama-bench (pp512 = prefill, tg64 = decode):", "", "\n\n".join(llama.values()), "",
          "Block costs: [profile/block_costs.md](profile/block_costs.md); Python work per block:", "",
          (out / "overhead" / "overhead.md").read_text().split("\n\n", 2)[-1]]
    write_report(out, "README", "\n".join(md) + "\n")
    return 0

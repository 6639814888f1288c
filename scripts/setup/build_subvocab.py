"""Count the model's tokens over ShareGPT responses (the pruned drafter vocabulary, FR-Spec) and report the
coverage of greedy output by the top-N tokens, for several N.

    python -m scripts.setup.build_subvocab --model-id smollm2-135m --sharegpt assets/sharegpt.jsonl \\
        --greedy runs/main/answers.jsonl runs/benchmark/raw.jsonl --out data/subvocab

Writes OUT/<model>.counts.npz (what --drafter-vocab reads) and OUT/coverage.md / coverage.json: for each N, the
share of greedy tokens inside the top N, per greedy file, and the head's size N/V (a drafter head call costs
~N/V of the full one). Greedy token ids come from answer files (``token_ids``, any lossless method's
answers are the greedy output) or benchmark raw files (``baseline_ids``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common.atomic import atomic_write_text
from kangaroo.subvocab import DEFAULT_SKIP, count_tokens, coverage, save_counts, top_ids

SIZES = (2048, 4096, 8192, 16384, 24576, 32768)


def greedy_tokens(path) -> list[list[int]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        out += r.get("baseline_ids") or r.get("token_ids") or []
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--sharegpt", default="assets/sharegpt.jsonl")
    p.add_argument("--skip-lines", type=int, default=DEFAULT_SKIP, help="ShareGPT lines not counted (eval prompts)")
    p.add_argument("--max-lines", type=int, default=None)
    p.add_argument("--greedy", nargs="*", default=[], help="answer / benchmark raw jsonl files with greedy ids")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--out", default="data/subvocab")
    a = p.parse_args(argv)
    from kangaroo.greedy import eos_ids_of
    from kangaroo.model_loading import load_tokenizer

    tok = load_tokenizer(a.model_id)
    from kangaroo.model_loading import load_causal_lm

    cfg = load_causal_lm(a.model_id, device="cpu", dtype="float32").config
    counts = count_tokens(tok, a.sharegpt, cfg.vocab_size, a.skip_lines, a.max_lines)
    name = Path(a.model_id.rstrip("/")).name.replace(".gguf", "")
    meta = {"model_id": a.model_id, "source": a.sharegpt, "skip_lines": a.skip_lines, "max_lines": a.max_lines,
            "tokens": int(counts.sum()), "vocab_size": int(cfg.vocab_size)}
    path = save_counts(Path(a.out) / f"{name}.counts.npz", counts, meta)
    eos = sorted(eos_ids_of(tok, cfg))
    greedy = {f: greedy_tokens(f) for f in a.greedy}
    rows = []
    for n in [int(x) for x in a.sizes.split(",")] + [cfg.vocab_size]:
        ids = top_ids(counts, min(n, cfg.vocab_size), always=eos)
        rows.append({"N": len(ids), "head_share": len(ids) / cfg.vocab_size,
                     **{f: coverage(t, ids) for f, t in greedy.items()}})
    cmd = shlex.join(["python", "-m", "scripts.setup.build_subvocab", *argv])
    lines = ["# Pruned drafter vocabulary: coverage of greedy tokens", "", f"`{cmd}`", "",
             f"Counts: {meta['tokens']:,} tokens of ShareGPT \"gpt\" turns (lines {a.skip_lines}+ of {a.sharegpt}), "
             f"the model's tokenizer; EOS ids {eos} always kept. Written to `{path}`.", "",
             "| N | N / V (head cost share) | "
             + " | ".join(f"{f} ({sum(map(len, t))} greedy tokens)" for f, t in greedy.items()) + " |",
             "|---:|---:|" + "---:|" * len(greedy)]
    for r in rows:
        lines.append(f"| {r['N']} | {r['head_share']:.3f} | " + " | ".join(f"{r[f]:.4f}" for f in greedy) + " |")
    out = Path(a.out)
    atomic_write_text(out / "coverage.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "coverage.json", json.dumps({"command": cmd, "meta": meta, "rows": rows}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Replay lookup drafter chains over recorded greedy outputs, without the model: the tokens per verifier pass and
the speedup the n-gram and memory drafters would reach, to choose the memory's settings and the chain order.

    python -m scripts.experiments replay_lookup --raw runs/benchmark/raw.jsonl --out runs/chain/replay \\
        [--memory-seed runs/main/answers.jsonl]

The questions of a benchmark's raw.jsonl are replayed in file order: the prompt (first turn, the chat template of
--model-id) and the baseline's greedy output. Each chain drafts under the goodput policy (its calibrator learns from
the replayed verdicts; the memory holds the outputs replayed before, and those of --memory-seed), the verifier's
tokens are the recorded greedy ones, and a block costs what the cost curve says: speedup = tokens * ar_ms / the
blocks' ms (lookups free, no prefill). The cost curve: --cost-curve (a JSON a run wrote with --cost-curve), else the
lean engine at 1 thread from runs/profile/block_costs.json. Output: OUT/replay.md and OUT/replay.json.
"""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.cli import OneLineParser, fail, resolve_question_file
from kangaroo.blocks import Block, Draft, Verification
from kangaroo.draft_policy import make_policy
from kangaroo.drafter_config import read_outputs
from kangaroo.drafters import SuffixMemory, make_drafter
from kangaroo.drafters.counters import source_rows
from kangaroo.verify_cost import CostCurve
from scripts.experiments.report_files import ENTRY, command_line
from scripts.experiments.teacher_forced import questions_data

# (chain, SuffixMemory settings): prompt lookup alone, then the memory after it with 1-, 2-, 3-token matches, and
# the memory first
VARIANTS = (("ngram", {}), ("ngram,memory", {"min_match": 1}), ("ngram,memory", {"min_match": 2}),
            ("ngram,memory", {"min_match": 3}), ("memory,ngram", {"min_match": 1}))
PROFILE = Path("runs/profile/block_costs.json")


def engine_curve(path: Path = PROFILE, variant: str = "auto/1t") -> tuple[CostCurve, float]:
    """The cost curve (and a greedy step's ms) of a block profile (python -m scripts.profile block): shallow layers
    per pass as on 1 token."""
    c = json.loads(path.read_text())["costs"]["variants"][variant]
    deep = [c["deep_ms"][k] for k in sorted(c["deep_ms"], key=int)]
    return CostCurve([c["shallow_ms"]] * len(deep), deep, c["head_lora_ms"]), c["ar_ms"]


def verdict(d: Draft, output: list[int], i: int) -> Block:
    """The block the verifier makes of draft ``d`` at output position ``i`` (its tokens: the greedy output)."""
    v = (output[i:i + len(d.tokens) + 1] + [-1] * (len(d.tokens) + 1))[:len(d.tokens) + 1]
    a = 0
    while a < len(d.tokens) and d.tokens[a] == v[a]:
        a += 1
    return Block(d, Verification(None, v), a, d.tokens[:a] + [v[a]])


def replay(spec: str, data: list[tuple[list[int], list[int]]], cost: CostCurve, ar_ms: float, seed=(),
           steps: int = 6, **memory_settings) -> dict:
    memory = SuffixMemory(**memory_settings)
    for output in seed:
        memory.add(output)
    chain = make_drafter(spec, steps, lambda: make_policy("goodput", 0.6, cost), memory=memory)
    tokens = passes = 0
    ms = 0.0
    for prompt, output in data:
        chain.begin(prompt)
        history, i = list(prompt), 0
        while i < len(output):
            blk = verdict(chain.draft(None, None, history), output, i)
            chain.observe(blk)
            n = min(len(blk.committed), len(output) - i)
            history += output[i:i + n]
            i, tokens, passes, ms = i + n, tokens + n, passes + 1, ms + cost.block_ms(blk.drafted, "ngram")
        chain.end(output)
    return {"chain": spec, "memory": memory_settings, "seeded": bool(seed), "tokens_per_pass": tokens / passes,
            "speedup": tokens * ar_ms / ms, "sources": source_rows(chain.by_source)}


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Lookup chains replayed over recorded greedy outputs (no model)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + ["", "| chain | memory | seeded | tokens per pass | "
                                                               "speedup (cost curve) | blocks by source |",
                                                               "|---|---|---|---:|---:|---|"]
    for r in results:
        by = ", ".join(f"{s['source']} {s['blocks']} (x{s['committed_per_pass'] or 0:.2f})" for s in r["sources"])
        mem = ", ".join(f"{k} {v}" for k, v in r["memory"].items()) or "-"
        lines.append(f"| {r['chain']} | {mem} | {'yes' if r['seeded'] else 'no'} | {r['tokens_per_pass']:.3f} | "
                     f"{r['speedup']:.3f}x | {by} |")
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    p = OneLineParser(prog=f"{ENTRY} replay_lookup", description=__doc__.splitlines()[0])
    p.add_argument("--raw", required=True, help="a benchmark's OUT/raw.jsonl (baseline_ids of every question)")
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--question-file", default=None, help="default: the Spec-Bench questions, as the benchmark's")
    p.add_argument("--cost-curve", default="", help="a CostCurve JSON (default: runs/profile, engine, 1 thread)")
    p.add_argument("--memory-seed", default="", help="an answer file whose outputs start the memory (also run)")
    p.add_argument("--out", default="runs/chain/replay")
    p.set_defaults(bench_name="spec_bench")
    args = p.parse_args(argv)
    if not Path(args.raw).is_file():
        fail(f"--raw {args.raw} does not exist: pass a benchmark's raw.jsonl")
    resolve_question_file(args)
    cost, ar_ms = engine_curve()
    if args.cost_curve:
        cost = CostCurve.from_json(args.cost_curve)
        ar_ms = cost.block_ms(0, "ngram")  # a greedy step: shallow + deep layers on one token
    data = questions_data(Path(args.raw), args.model_id, args.question_file)
    seeds = [()] + ([read_outputs(Path(args.memory_seed))] if args.memory_seed else [])
    results = [replay(spec, data, cost, ar_ms, seed, **mem) for seed in seeds for spec, mem in VARIANTS
               if seed == () or "memory" in spec]
    meta = {"raw": args.raw, "questions": len(data), "memory seed": args.memory_seed or "none",
            "cost curve": args.cost_curve or f"{PROFILE} (engine, 1 thread)", "greedy step ms": round(ar_ms, 2),
            "command": command_line("replay_lookup", argv or [])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.md").write_text(markdown(results, meta))
    (out / "replay.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown(results, meta))
    return 0

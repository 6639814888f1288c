"""The serving load run: start the server on loopback, replay ShareGPT prompts through concurrent streaming clients,
check every answer against greedy decoding, write OUT/README.md and OUT/summary.json.

    python -m scripts.serve_load --model-id smollm2-135m --prompts-jsonl assets/sharegpt.jsonl --out runs/serve

Phases, on one server that learns online from all of them (``--dvi-online true`` + ``--server-args``):
  learn      the first --learn-prompts prompts by --learn-concurrency clients: the drafter's agreement over the
             served stream (first vs last quarter of its blocks, from the server's acceptance.csv)
  clients    --requests-per-level further prompts at each of --levels concurrent clients: latency to the first
             token and per output token (p50/p95), total tokens/s, errors
  overload   max batch + queue size + --overload-extra clients at once (short answers): 503s past the bound only
Then SIGTERM (the drain and the final checkpoint) and the greedy reference: the baseline driver on the same prompts
(OUT/baseline_T{max tokens}.jsonl, resumable, so a rerun does not decode them again). Bounded: each phase stops
sending after --max-seconds. Exit 1 if an answer differs from greedy decoding or a request was lost or got a 5xx
within the bound.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from common.errors import UserError
from scripts.serve_load.client import burst, run_phase
from scripts.serve_load.report import (
    agreement,
    machine,
    phase_summary,
    targets,
    write_json,
    write_readme,
)
from scripts.serve_load.server import ServerProcess


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    p.add_argument("--out", default="runs/serve")
    p.add_argument("--learn-prompts", type=int, default=300)
    p.add_argument("--learn-concurrency", type=int, default=4)
    p.add_argument("--levels", default="1,2,4,8", help="comma-separated concurrent clients")
    p.add_argument("--requests-per-level", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=1800, help="per phase: no new request after this")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-size", type=int, default=16)
    p.add_argument("--overload-extra", type=int, default=8, help="clients past the bound in the overload phase (0: skip)")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--server-args", default="--adapter-mode train", help="more server flags (the main job's adapter)")
    p.add_argument("--overwrite", action="store_true", help="remove OUT/state (an earlier run's server state) first")
    return p


def prompts_of(path: str, n: int) -> list[str]:
    from evaluation.eval_loop import sharegpt_questions

    out = [q["turns"][0] for q in sharegpt_questions(path, n)]
    if len(out) < n:
        raise UserError(f"{path} holds {len(out)} usable prompts, this run needs {n}: lower the counts")
    return out


def serve_phases(args, server, prompts: list[str]) -> tuple[list, list, tuple[int, int]]:
    """Run every phase; returns (phase summaries without the reference, all records, learn-phase block range)."""
    model, url, mt = server.health()["model"], server.url, args.max_tokens
    levels = [int(c) for c in args.levels.split(",") if c.strip()]
    runs, records = [], []
    step0 = server.health().get("global_step", 0)
    learn = list(enumerate(prompts[:args.learn_prompts]))
    runs.append(("learn", args.learn_concurrency, *run_phase(url, model, learn, args.learn_concurrency, mt,
                                                             args.max_seconds)))
    step1 = server.health().get("global_step", 0)
    at = args.learn_prompts
    for c in levels:
        chunk = [(i, prompts[i]) for i in range(at, at + args.requests_per_level)]
        at += args.requests_per_level
        runs.append(("clients", c, *run_phase(url, model, chunk, c, mt, args.max_seconds)))
    if args.overload_extra:
        n = args.max_batch + args.queue_size + args.overload_extra
        picks = [(i % len(prompts), prompts[i % len(prompts)]) for i in range(n)]
        recs = burst(url, model, picks, min(16, mt))
        runs.append(("overload", n, recs, max((r.get("total_s") or 0) for r in recs)))
    for name, c, recs, _ in runs:
        records += [{"phase": name, "concurrency": c, **r} for r in recs]
    return runs, records, (step0, step1)


def reference(args, n: int, out: Path) -> dict:
    """Greedy token ids per prompt index: the baseline driver's answers to the same prompts (resumable file)."""
    from common.jsonl_store import JsonlStore
    from evaluation.inference_baseline import main as baseline

    path = out / f"baseline_T{args.max_tokens}.jsonl"
    rc = baseline(["--model-id", args.model_id, "--device", "cpu", "--num-threads", str(args.num_threads),
                   "--prompts-jsonl", args.prompts_jsonl, "--max-prompts", str(n), "--max-new-tokens",
                   str(args.max_tokens), "--answer-file", str(path), "--no-progress"])
    if rc:
        raise UserError(f"the greedy reference failed (exit {rc})")
    return {int(r["question_id"].split("-")[1]): r["token_ids"][0] for r in JsonlStore(path).records()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    state = out / "state"
    if state.exists():
        if not args.overwrite:
            raise UserError(f"{state} holds an earlier run's server state: pass --overwrite to remove it and start "
                            "afresh (the top1_agree figure needs a drafter that starts from scratch)")
        shutil.rmtree(state)
    out.mkdir(parents=True, exist_ok=True)
    n = args.learn_prompts + args.requests_per_level * len(args.levels.split(","))
    prompts = prompts_of(args.prompts_jsonl, n)
    flags = ["--dvi-online", "true", "--num-threads", str(args.num_threads), "--max-batch", str(args.max_batch),
             "--queue-size", str(args.queue_size), "--max-new-tokens", str(args.max_tokens),
             *shlex.split(args.server_args)]
    server = ServerProcess(args.model_id, state, out / "server_log.txt", flags)
    try:
        runs, records, (s0, s1) = serve_phases(args, server, prompts)
        (out / "metrics.txt").write_text(server.metrics_text(), encoding="utf-8")
    finally:
        rc = server.stop()
    refs = reference(args, n, out)
    phases = [phase_summary(name, c, recs, wall, refs) for name, c, recs, wall in runs]
    summary = {"command": "python -m scripts.serve_load " + shlex.join(sys.argv[1:] if argv is None else argv),
               "server_command": shlex.join(["python", "-m", "kangaroo_dvi.serve", *server.command[3:]]),
               "model_id": args.model_id, "machine": machine(), "server_exit_code": rc, "phases": phases,
               "agreement": agreement(state / "metrics" / "acceptance.csv", s0, s1), "targets": targets(phases)}
    write_json(out / "summary.json", summary)
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"[serve_load] {write_readme(out, summary)}: " + "; ".join(summary["targets"]))
    bad = any(p["equal_to_greedy"] != p["checked"] or p["server_5xx"] or p["lost"] for p in phases)
    return 1 if bad or rc != 0 else 0


if __name__ == "__main__":
    from evaluation.cli import run_main

    raise SystemExit(run_main(main))

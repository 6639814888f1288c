"""The serving load run: serve ShareGPT prompts on loopback to concurrent streaming clients, check every answer
against greedy decoding (or plain sampling), write OUT/README.md and OUT/summary.json.

    python -m scripts.serve_load --model-id smollm2-135m --prompts-jsonl assets/sharegpt.jsonl --out runs/serve \
        --overwrite
    # sampled: every request sends --temperature, --top-p and --seed; the reference samples every prompt with them
    python -m scripts.serve_load --temperature 0.7 --top-p 0.95 --seed 1 --out runs/serve_t07 --overwrite

Two servers, one after the other (flags: --max-batch, --queue-size, --num-threads, --server-args):
  learn      ``--dvi-online true`` from a fresh state (OUT/state): the first --learn-prompts prompts by
             --learn-concurrency clients; the drafter's held-out agreement at the server's start and end
             (OUT/state/metrics/heldout.csv, dvi/heldout.py) and its agreement over the served stream (first vs
             last quarter of its blocks, from OUT/state/metrics/acceptance.csv); then, on the same server,
             --requests-per-level further prompts at each of --learn-levels concurrent clients (``learn-clients``:
             the learning server's own scaling, beside the frozen one's). SIGTERM: the drain, then final.pt.
  clients    ``--dvi-online false --load-lora OUT/state/checkpoints/final.pt`` (that drafter deployed frozen, so every
             level serves the same drafter; OUT/state_deployed): --requests-per-level further prompts at each of
             --levels concurrent clients: latency to the first token and per output token (p50/p95), total
             tokens/s, errors
  overload   on the same server, max batch + queue size + --overload-extra clients at once (short answers): 503s
             past the bound only
Then the reference: the baseline driver on the same prompts, greedy or plain sampling with the same --temperature,
--top-p and --seed (OUT/baseline_T{max tokens}[_temp.._topp.._seed..].jsonl, resumable, so a rerun does not decode
them again). Bounded: each phase stops sending after --max-seconds. Exit 1 if an answer differs from the reference, a
request was lost, got a 5xx, or a 503 within the bound.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import UserError
from dvi.metrics import heldout_ends
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
    p.add_argument("--learn-levels", default="1,4",
                   help="concurrent clients for the learning server after its learn phase ('': none)")
    p.add_argument("--requests-per-level", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=1800, help="per phase: no new request after this")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-size", type=int, default=16)
    p.add_argument("--overload-extra", type=int, default=8,
                   help="clients past the bound in the overload phase (0: skip)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sent with every request (0: greedy; the server's default for a request without it is 1)")
    p.add_argument("--top-p", type=float, default=1.0, help="sent with every request")
    p.add_argument("--seed", type=int, default=0, help="sent with every request; the baseline driver's --seed")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--server-args", default="", help="more server flags (default none: the main job's recipe)")
    p.add_argument("--overwrite", action="store_true", help="remove OUT/state (an earlier run's server state) first")
    return p


def prompts_of(path: str, n: int) -> list[str]:
    from evaluation.eval_loop import sharegpt_questions

    out = [q["turns"][0] for q in sharegpt_questions(path, n)]
    if len(out) < n:
        raise UserError(f"{path} holds {len(out)} usable prompts, this run needs {n}: lower the counts")
    return out


def run(name: str, concurrency: int, server, prompts: list[tuple[int, str]], args) -> tuple:
    recs, wall = run_phase(server.url, server.health()["model"], prompts, concurrency, args.max_tokens,
                           args.max_seconds, sampling_of(args))
    return name, concurrency, recs, wall


def learn_phase(args, server, prompts: list[str]) -> tuple[tuple, tuple[int, int]]:
    """The learning server's phase, and the block range it covers."""
    step0 = server.health()["global_step"]
    phase = run("learn", args.learn_concurrency, server, list(enumerate(prompts[:args.learn_prompts])), args)
    return phase, (step0, server.health()["global_step"])


def level_phases(args, server, prompts: list[str], name: str, levels: list[int], at: int) -> list[tuple]:
    """Each level of concurrent clients on its own ``--requests-per-level`` prompts, from prompt ``at`` on."""
    runs = []
    for c in levels:
        runs.append(run(name, c, server, [(i, prompts[i]) for i in range(at, at + args.requests_per_level)], args))
        at += args.requests_per_level
    return runs


def learning_phases(args, server, prompts: list[str]) -> tuple:
    """The learn phase (and its block range), then the learning server at each --learn-levels (the prompts after
    every other phase's)."""
    learn, steps = learn_phase(args, server, prompts)
    at = args.learn_prompts + args.requests_per_level * len(levels_of(args))
    return learn, steps, level_phases(args, server, prompts, "learn-clients", levels_of(args, "learn_levels"), at)


def client_phases(args, server, prompts: list[str]) -> list[tuple]:
    """Each level of concurrent clients on its own prompts, then the burst past the queue bound."""
    runs = level_phases(args, server, prompts, "clients", levels_of(args), args.learn_prompts)
    if args.overload_extra:
        n = args.max_batch + args.queue_size + args.overload_extra
        recs = burst(server.url, server.health()["model"], [(i % len(prompts), prompts[i % len(prompts)])
                                                            for i in range(n)], min(16, args.max_tokens),
                     sampling_of(args))
        runs.append(("overload", n, recs, max((r.get("total_s") or 0) for r in recs)))
    return runs


def sampling_of(args) -> dict:
    """The sampling fields every request sends (the same seed for each: the baseline driver samples every prompt so)."""
    return {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed}


def levels_of(args, flag: str = "levels") -> list[int]:
    return [int(c) for c in getattr(args, flag).split(",") if c.strip()]


def served(server, out: Path, name: str, phases) -> tuple:
    """Run ``phases(server)``, keep the server's /metrics, then SIGTERM it; returns (phases' result, exit code)."""
    try:
        result = phases(server)
        atomic_write_text(out / f"metrics_{name}.txt", server.metrics_text())
    finally:
        rc = server.stop()
    return result, rc


def reference(args, n: int, out: Path) -> dict:
    """Token ids per prompt index: the baseline driver's answers to the same prompts (resumable file), greedy or
    plain sampling with the requests' params and seed."""
    from common.jsonl_store import JsonlStore
    from evaluation.inference_baseline import main as baseline

    sampled = f"_temp{args.temperature}_topp{args.top_p}_seed{args.seed}" if args.temperature > 0 else ""
    path = out / f"baseline_T{args.max_tokens}{sampled}.jsonl"
    rc = baseline(["--model-id", args.model_id, "--device", "cpu", "--num-threads", str(args.num_threads),
                   "--prompts-jsonl", args.prompts_jsonl, "--max-prompts", str(n), "--max-new-tokens",
                   str(args.max_tokens), "--answer-file", str(path), "--no-progress", "--temperature",
                   str(args.temperature), "--top-p", str(args.top_p), "--seed", str(args.seed)])
    if rc:
        raise UserError(f"the reference (the baseline driver) failed (exit {rc})")
    return {int(r["question_id"].split("-")[1]): r["token_ids"][0] for r in JsonlStore(path).records()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out, state = Path(args.out), Path(args.out) / "state"
    for d in (state, out / "state_deployed"):
        if d.exists() and not args.overwrite:
            raise UserError(f"{d} holds an earlier run's server state: pass --overwrite to remove it and start afresh "
                            "(the top1_agree figure needs a drafter that starts from scratch)")
        shutil.rmtree(d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    n = args.learn_prompts + args.requests_per_level * (len(levels_of(args)) + len(levels_of(args, "learn_levels")))
    prompts = prompts_of(args.prompts_jsonl, n)
    flags = ["--num-threads", str(args.num_threads), "--max-batch", str(args.max_batch), "--queue-size",
             str(args.queue_size), "--max-new-tokens", str(args.max_tokens), *shlex.split(args.server_args)]
    learner = ServerProcess(args.model_id, state, out / "server_learn_log.txt", [*flags, "--dvi-online", "true"])
    (learn, (s0, s1), learn_levels), rc_learn = served(learner, out, "learn",
                                                       lambda s: learning_phases(args, s, prompts))
    final = state / "checkpoints" / "final.pt"
    deployed = ServerProcess(args.model_id, out / "state_deployed", out / "server_log.txt",
                             [*flags, "--dvi-online", "false", "--load-lora", str(final)])
    clients, rc = served(deployed, out, "deployed", lambda s: client_phases(args, s, prompts))
    refs = reference(args, n, out)
    runs = [learn, *learn_levels, *clients]
    phases = [phase_summary(name, c, recs, wall, refs) for name, c, recs, wall in runs]
    summary = {"command": "python -m scripts.serve_load " + shlex.join(sys.argv[1:] if argv is None else argv),
               "server_commands": [shlex.join(["python", *s.command[1:]]) for s in (learner, deployed)],
               "model_id": args.model_id, "machine": machine(), "server_exit_codes": [rc_learn, rc],
               "sampling": sampling_of(args) if args.temperature > 0 else "greedy",
               "phases": phases, "agreement": agreement(state / "metrics" / "acceptance.csv", s0, s1),
               "heldout": heldout_ends(state / "metrics" / "heldout.csv"),
               "targets": targets(phases, "greedy decoding" if args.temperature <= 0 else "plain sampling (same seed)")}
    write_json(out / "summary.json", summary)
    records = [{"phase": name, "concurrency": c, **r} for name, c, recs, _ in runs for r in recs]
    atomic_write_text(out / "requests.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    print(f"[serve_load] {write_readme(out, summary)}: " + "; ".join(summary["targets"]))
    bad = any(p["equal_to_greedy"] != p["checked"] or p["server_5xx"] or p["lost"]
              or (p["phase"] != "overload" and p["rejected_503"]) for p in phases)
    return 1 if bad or rc or rc_learn else 0


if __name__ == "__main__":
    from evaluation.cli import run_main

    raise SystemExit(run_main(main))

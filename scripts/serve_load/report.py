"""The load run's figures: per phase (requests, 503s, errors, answers equal to the reference, latency to the first
token and per output token at p50/p95, total tokens/s), the drafter's agreement over the served stream (from the
server's acceptance.csv), and OUT/README.md with the command that made them."""
from __future__ import annotations

import json
import platform
from pathlib import Path

from common.atomic import atomic_write_text
from scripts.serve_load.client import percentile


def matches(rec: dict, refs: dict) -> bool:
    """A request's tokens equal the reference's for its prompt at its max_tokens (a prefix of the reference's: greedy,
    or plain sampling, whose token at a position depends on the seed and the position alone)."""
    ref = refs.get(rec["prompt"])
    return ref is not None and rec.get("token_ids") == ref[:rec["max_tokens"]]


def ms(x):
    return None if x is None else round(1e3 * x, 1)


def phase_summary(name: str, concurrency: int, records: list[dict], wall_s: float, refs: dict) -> dict:
    ok = [r for r in records if r["status"] == 200 and not r.get("error")]
    tokens = sum(len(r["token_ids"]) for r in ok)
    tpot = [(r["total_s"] - r["ttft_s"]) / (len(r["token_ids"]) - 1) for r in ok
            if r.get("ttft_s") is not None and len(r["token_ids"]) > 1]
    ttft = [r.get("ttft_s") for r in ok]
    return {"phase": name, "concurrency": concurrency, "requests": len(records), "ok": len(ok),
            "rejected_503": sum(r["status"] == 503 for r in records),
            "server_5xx": sum(r["status"] is not None and r["status"] >= 500 and r["status"] != 503 for r in records),
            "lost": sum(r["status"] is None or (r["status"] == 200 and bool(r.get("error"))) for r in records),
            "equal_to_greedy": sum(matches(r, refs) for r in ok), "checked": sum(r["prompt"] in refs for r in ok),
            "tokens": tokens, "wall_s": round(wall_s, 2), "tokens_per_s": round(tokens / wall_s, 2) if wall_s else None,
            "ttft_p50_ms": ms(percentile(ttft, 0.5)), "ttft_p95_ms": ms(percentile(ttft, 0.95)),
            "tpot_p50_ms": ms(percentile(tpot, 0.5)), "tpot_p95_ms": ms(percentile(tpot, 0.95))}


def agreement(acceptance_csv, first_step: int, last_step: int) -> dict:
    """top1_agree and tokens per block over the first and last quarter of the blocks in (first_step, last_step]."""
    from dvi.metrics import read_acceptance_csv

    rows = [r for r in read_acceptance_csv(acceptance_csv) if first_step < r["step"] <= last_step]
    q = max(1, len(rows) // 4)

    def stats(part):
        agree = [r["top1_agree"] for r in part if r["top1_agree"] is not None]
        return {"blocks": len(part), "top1_agree": round(sum(agree) / len(agree), 4) if agree else None,
                "scored": len(agree), "mean_accepted": round(sum(r["committed"] for r in part) / len(part), 3)
                if part else None}

    return {"blocks": len(rows), "first_quarter": stats(rows[:q]), "last_quarter": stats(rows[-q:]),
            "all": stats(rows)}


def _row(p: dict, bases: dict) -> str:
    base = bases.get(p["phase"])
    speed = f"{p['tokens_per_s'] / base:.2f}x" if base and p["tokens_per_s"] else "-"
    return (f"| {p['phase']} | {p['concurrency']} | {p['requests']} | {p['ok']} | {p['rejected_503']} | "
            f"{p['server_5xx']} | {p['lost']} | {p['equal_to_greedy']}/{p['checked']} | {p['ttft_p50_ms']} / "
            f"{p['ttft_p95_ms']} | {p['tpot_p50_ms']} / {p['tpot_p95_ms']} | {p['tokens_per_s']} | {speed} |")


LEVELS = ("clients", "learn-clients")  # phases whose tokens/s are shown against their own 1-client figure


def write_readme(out: Path, summary: dict) -> Path:
    phases = summary["phases"]
    bases = {p["phase"]: p["tokens_per_s"] for p in phases if p["phase"] in LEVELS and p["concurrency"] == 1}
    lines = [f"# Serving under load: {summary['model_id']}", "",
             "Written by `scripts/serve_load` (loopback only, bounded count and duration). Command:", "",
             "```bash", summary["command"], "```", "",
             (f"Machine: {summary['machine']}. Servers: the `learn` and `learn-clients` phases "
              f"`{summary['server_commands'][0]}`; the "
              f"others, on the drafter it learned, deployed frozen: `{summary['server_commands'][1]}`."), "",
             f"Reference (every answer checked against it): {reference_of(summary)}.", "",
             ("| phase | clients | requests | ok | 503 | other 5xx | lost | equal to reference | TTFT p50 / p95 ms | "
              "per output token p50 / p95 ms | tokens/s | vs 1 client |"),
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|"]
    lines += [_row(p, bases) for p in phases]
    a = summary.get("agreement")
    if a:
        f, l = a["first_quarter"], a["last_quarter"]
        lines += ["", (f"Drafter over the served stream (the `learn` phase, {a['blocks']} blocks, server "
                       f"`acceptance.csv`): top1_agree first quarter {f['top1_agree']} ({f['scored']} scored "
                       f"blocks), last quarter **{l['top1_agree']}** ({l['scored']}); tokens per verifier pass "
                       f"{f['mean_accepted']} -> {l['mean_accepted']}.")]
    for d, ends in (summary.get("heldout") or {}).items():
        a, b = ends["start"], ends["end"]
        lines += ["", (f"Held-out agreement of `{d}` (the learning server, on the fixed held-out set of {b['n']} "
                       f"positions, server `heldout.csv`): top-1 {a['top1']:.3f} -> **{b['top1']:.3f}**, accepted "
                       f"length {a['accept_len']:.2f} -> {b['accept_len']:.2f}, over {b['trainer_steps']} trainer "
                       "steps.")]
    lines += ["", "Targets: " + "; ".join(summary["targets"]), "",
              ("Files: `summary.json` (these figures), `requests.jsonl` (one line per request, token ids included), "
               "`server_learn_log.txt` and `server_log.txt`, `metrics_learn.txt` and `metrics_deployed.txt` (each "
               "server's /metrics at its end), `state/` (the learning server's: checkpoints git-ignored, "
               "`state/metrics/` the learner's CSVs), `baseline_T*.jsonl` (the reference: the baseline driver "
               "on the same prompts).")]
    return atomic_write_text(out / "README.md", "\n".join(lines) + "\n")


def reference_of(summary: dict) -> str:
    """What the answers were checked against: greedy decoding, or plain sampling with the requests' params."""
    p = summary.get("sampling", "greedy")
    if not isinstance(p, dict):
        return "greedy decoding (the baseline driver)"
    return (f"plain sampling with the same params and seed (the baseline driver's --temperature {p['temperature']} "
            f"--top-p {p['top_p']} --seed {p['seed']}, which every request sent)")


def targets(phases: list[dict], reference: str = "greedy decoding") -> list[str]:
    """The issue's targets, each as met / not met with its figure (``reference``: what the answers were checked
    against)."""
    by = {(p["phase"], p["concurrency"]): p for p in phases}
    one, four = by.get(("clients", 1)), by.get(("clients", 4))
    out = []
    if one and four and one["tokens_per_s"]:
        ratio = four["tokens_per_s"] / one["tokens_per_s"]
        out.append(f"4 clients / 1 client tokens/s = {ratio:.2f}x ({'met' if ratio >= 2.5 else 'not met'}: >= 2.5x)")
    equal = sum(p["equal_to_greedy"] for p in phases)
    checked = sum(p["checked"] for p in phases)
    out.append(f"{equal}/{checked} answers equal to {reference}")
    within = [p for p in phases if p["phase"] != "overload"]
    bad = sum(p["server_5xx"] + p["lost"] + p["rejected_503"] for p in within)
    out.append(f"{bad} lost requests, 5xx or 503 within the queue bound")
    learn1, learn4 = by.get(("learn-clients", 1)), by.get(("learn-clients", 4))
    if learn1 and learn4 and learn1["tokens_per_s"]:
        ratio = learn4["tokens_per_s"] / learn1["tokens_per_s"]
        out.append(f"learning server, 4 clients / its 1 client tokens/s = {ratio:.2f}x "
                   f"({'met' if ratio >= 2.0 else 'not met'}: >= 2.0x)")
    if learn4 and four and four["tokens_per_s"]:
        share = learn4["tokens_per_s"] / four["tokens_per_s"]
        out.append(f"learning server at 4 clients = {share:.0%} of the frozen server's tokens/s "
                   f"({'met' if share >= 0.75 else 'not met'}: >= 75%)")
    over = by.get(("overload", max((c for ph, c in by if ph == "overload"), default=0)))
    if over:
        out.append(f"past the bound: {over['rejected_503']} of {over['requests']} turned away with 503, "
                   f"{over['server_5xx'] + over['lost']} other errors")
    return out


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared unless stated otherwise)"


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
